"""The pipeline: one run (`runner.py`, `checkpoint.py`), one grid cell (`cell.py`), the report
(`report.py`), the testbed models (`testbed.py`) and the papermill wrapper every DVC stage calls
(`nbrun.py`)."""
