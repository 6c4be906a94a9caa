"""Evaluation of the student (and teachers): MS-CXR-T-style classification accuracy in the layout of the
paper's Table 1, paired significance tests, and report-generation metrics."""
