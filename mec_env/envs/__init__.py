"""Environment classes; registered with Gymnasium by ``import mec_env``."""
