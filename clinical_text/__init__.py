"""Reading clinical free text: the vocabulary, the scope machinery and the CheXpert findings reader.

data_prep (the drift report) and evaluation (the answer reader) both import this package; it imports neither.
``stats`` holds the statistics both use (McNemar's exact test), so that there is one implementation.
"""
from .findings import Decision, FindingsReader, explain, read_findings, reader
from .vocabulary import (CALLS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Vocabulary, VocabularyError,
                         default_vocabulary, load_vocabulary, vocabulary_from_dict)

__all__ = ['CALLS', 'Decision', 'FindingsReader', 'NEGATIVE', 'OBSERVATIONS', 'POSITIVE', 'UNCERTAIN', 'Vocabulary',
           'VocabularyError', 'default_vocabulary', 'explain', 'load_vocabulary', 'read_findings', 'reader',
           'vocabulary_from_dict']
