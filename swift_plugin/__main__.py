"""``python -m swift_plugin <swift command> ...``: ms-swift's CLI with APO registered.

For a checkout that is not pip-installed (so no ``swift_apo.pth``): each child interpreter that
ms-swift starts gets this checkout on PYTHONPATH and arms the APO registration before parsing.
"""
import os

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get('PYTHONPATH')]))
    from swift.cli.main import ROUTE_MAPPING, cli_main
    cli_main({**ROUTE_MAPPING, 'rlhf': 'swift_plugin.cli_rlhf'})


if __name__ == '__main__':
    main()
