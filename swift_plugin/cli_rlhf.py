"""Child script for ``python -m swift_plugin rlhf``: ms-swift's ``swift/cli/rlhf.py`` with APO armed."""
if __name__ == '__main__':
    from swift_plugin import install
    install()
    from swift.cli.utils import try_use_single_device_mode
    try_use_single_device_mode()
    from swift.pipelines import rlhf_main
    rlhf_main()
