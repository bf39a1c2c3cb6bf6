"""Started with this folder on PYTHONPATH and WEBDA_SIMULATED_GPU set, a Python process is the
simulated GPU machine (simulated_gpu.install): "machine" for the dry run's pytest process, whose
plugin enters the simulated GPU per case; "device" for the processes it starts (a test's
subprocess), which run on the simulated GPU from start to end."""

import os

_MODE = os.environ.get("WEBDA_SIMULATED_GPU")
if _MODE in ("machine", "device"):
    import simulated_gpu

    simulated_gpu.install()
    if _MODE == "device":
        simulated_gpu.SimulatedGpu("cpu").__enter__()
