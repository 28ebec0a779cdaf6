"""Recipe entry point of the model tasks (train, evaluate, score, promote): the operator names this file and
runner.py runs it as ``dss_runtime.dss_model``. The engine is the package ``model/``."""

from .model.actions import main

if __name__ == "__main__":
    main()
