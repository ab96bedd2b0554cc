import os

import pytest
import torch

# One thread: two threads on a busy 2-core box can be ~80x slower (OpenMP spinning).
torch.set_num_threads(1)
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
