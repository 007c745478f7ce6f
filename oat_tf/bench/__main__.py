"""`python -m oat_tf.bench`: the OAT training-step benchmark."""

from absl import app

from oat_tf.bench import train_step

if __name__ == "__main__":
    train_step.define_flags()
    app.run(train_step.main)
