"""SavedModel export for TF Serving, with early exit for multi-exit networks."""

from oat_tf.export.adaptive_saved_model import WITH_THRESHOLDS_SIGNATURE_KEY
from oat_tf.export.adaptive_saved_model import export_adaptive_saved_model
from oat_tf.export.adaptive_saved_model import load_adaptive_fn
from oat_tf.export.adaptive_saved_model import load_early_exit_info
from oat_tf.export.saved_model import IMAGE_INPUT_NAME
from oat_tf.export.saved_model import LAMBDA_INPUT_NAME
from oat_tf.export.saved_model import SIGNATURE_KEY
from oat_tf.export.saved_model import copy_with_model_card
from oat_tf.export.saved_model import export_saved_model
from oat_tf.export.saved_model import load_model_card
from oat_tf.export.saved_model import load_serving_fn
from oat_tf.export.saved_model import predict_rest_json
from oat_tf.export.saved_model import signature_widths
from oat_tf.export.saved_model import width_signature_name

__all__ = [
    "IMAGE_INPUT_NAME",
    "LAMBDA_INPUT_NAME",
    "SIGNATURE_KEY",
    "WITH_THRESHOLDS_SIGNATURE_KEY",
    "copy_with_model_card",
    "export_adaptive_saved_model",
    "export_saved_model",
    "load_adaptive_fn",
    "load_early_exit_info",
    "load_model_card",
    "load_serving_fn",
    "predict_rest_json",
    "signature_widths",
    "width_signature_name",
]
