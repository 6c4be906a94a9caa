"""Image paths in rows: as written (a path, a list, HF Image dicts), resolved under an image root that a path may
leave only with permission, and checked to exist and decode."""
import os
from dataclasses import dataclass

from .rows import field_error


@dataclass(frozen=True)
class ImagePolicy:
    root: str
    allow_outside_root: bool = False



def image_paths(row, where, column) -> list:
    """A row's image path(s) as written: a path, a list of paths, or {'path': ...} dicts (HF Image)."""
    value = row.get(column)
    if value is None:
        raise field_error(where, column, 'missing', 'missing field')
    items = value if isinstance(value, list) else [value]
    paths = []
    for i, item in enumerate(items):
        field = column if not isinstance(value, list) else f'{column}[{i}]'
        if isinstance(item, dict) and isinstance(item.get('path'), str):
            item = item['path']
        if not isinstance(item, str) or not item.strip():
            kind = 'embedded image bytes' if isinstance(item, dict) else type(item).__name__
            raise field_error(where, field, f'expected an image path, found {kind}', 'wrong type')
        paths.append(item.strip())
    if not paths:
        raise field_error(where, column, 'expected a path or a non-empty list of paths', 'missing field')
    return paths


def resolve_image(path: str, policy: ImagePolicy, where: str, field: str) -> str:
    """The absolute path of an image under the image root; paths that leave the root need permission.
    Symbolic links (in the root and the path) are followed before the check, so a link cannot lead out."""
    root = os.path.abspath(policy.root)
    resolved = os.path.normpath(os.path.join(root, path))
    if not policy.allow_outside_root:
        if not _inside(resolved, root):
            how = 'is absolute' if os.path.isabs(path) else 'leaves the image root'
        elif not _inside(os.path.realpath(resolved), os.path.realpath(root)):
            how = f'leads out of the image root through a symbolic link (to {os.path.realpath(resolved)})'
        else:
            return resolved
        raise field_error(where, field, f'image path {path!r} {how} ({root}); pass --allow-outside-image-root '
                          f'if that is intended', 'image outside root')
    return resolved


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_image(path: str, where: str, field: str) -> None:
    """The image exists and decodes."""
    from PIL import Image
    if not os.path.isfile(path):
        raise field_error(where, field, f'image not found: {path}', 'image missing')
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as e:  # PIL raises many types for broken files
        raise field_error(where, field, f'image does not decode: {path} ({type(e).__name__}: {e})',
                          'image unreadable') from None
