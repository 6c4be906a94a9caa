"""APO (Autonomous Preference Optimization) for ms-swift: ``swift rlhf --rlhf_type apo``.

Importing this package is cheap: ms-swift is patched only when its modules are imported
(see registration.py). ``install()`` arms the patches; the installed ``swift_apo.pth`` calls it in
every interpreter, so ms-swift's child processes and torchrun ranks all know ``apo``.
"""
from .registration import install

__version__ = '0.1.0'
__all__ = ['install']
