"""Joining ``swift infer``'s result rows back to the requests they answer."""
import hashlib
from typing import Dict


def request_fingerprint(row: Dict) -> str:
    """What ``swift infer`` keeps of a request (its user turn and image paths), hashed. ms-swift drops
    unknown columns such as ``study_id`` from its result file, so answers are joined back on this."""
    messages = row.get('messages') or []
    user = next((m.get('content') for m in messages if isinstance(m, dict) and m.get('role') == 'user'), None)
    images = [image.get('path') if isinstance(image, dict) else image for image in row.get('images') or []]
    return hashlib.sha256(repr((user, images)).encode()).hexdigest()
