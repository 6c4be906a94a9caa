"""CXR-MAX (or any dataset of its shape) -> ms-swift JSONL for APO's three stages, and a drift report.

Source row -> normalised study (records.py, studies.py) -> output rows (stages.py), behind a thin
CLI (cli.py): ``python -m data_prep {sft,consensus,apo,report} --help``.
"""
