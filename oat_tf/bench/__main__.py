"""`python -m oat_tf.bench`: the OAT training-step benchmark."""

from oat_tf.bench import train_step

if __name__ == "__main__":
    train_step.run()
