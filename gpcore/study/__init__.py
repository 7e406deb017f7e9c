"""The study: the papermill runner behind ``run_all.sh`` (``runner``), the stages' shared
pipeline (``pipeline``), tables for the README (``report``), the threshold explorer and the
efficiency measurements."""
