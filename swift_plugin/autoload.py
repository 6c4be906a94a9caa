"""Imported by ``swift_apo.pth`` at interpreter start-up; ``SWIFT_APO_DISABLE=1`` turns it off."""
import os

if os.environ.get('SWIFT_APO_DISABLE', '0').lower() in ('', '0', 'false', 'no'):
    from .registration import install
    install()
