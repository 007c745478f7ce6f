"""The mixture-BN layout's statistics."""

import math

from oat_tf.reporting import study_mixture


def test_z_score_matches_the_closed_form():
    z = study_mixture.z_score(0.6, 0.5, 1000, 1000)
    assert math.isclose(z, 0.1 / math.sqrt(0.24 / 1000 + 0.25 / 1000))
    assert study_mixture.z_score(1.0, 1.0, 10, 10) == 0.0
