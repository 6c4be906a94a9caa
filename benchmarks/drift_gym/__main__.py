"""``python -m benchmarks.drift_gym {make,run}``: the controlled drift benchmark (docs/drift-gym.md).

    python -m benchmarks.drift_gym make --config small --out gym-data/     # the synthetic studies only
    python -m benchmarks.drift_gym run --config small                      # every arm x seed, the page
    python -m benchmarks.drift_gym run --config small --sweeps             # ... and the K / drift / beta sweeps

A rerun keeps every step that finished (same command, outputs present) and writes the page again.
"""
import argparse
import os
import sys

from datafiles import DataError

from . import config as gym_config
from .make import make
from .steps import StepFailed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.drift_gym', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    for name, text in (('make', 'write the synthetic studies, teachers and truth'),
                       ('run', 'train and score every arm on every seed, write the page')):
        sub = commands.add_parser(name, help=text)
        sub.add_argument('--config', default='small',
                         help=f'a named configuration ({", ".join(gym_config.NAMED)}) or a YAML file of overrides')
        sub.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                         help='override one field of the configuration (repeatable)')
        sub.add_argument('--out', help='output folder (make: required; run: default runs/drift_gym/<config>)')
        if name == 'run':
            sub.add_argument('--sweeps', action='store_true', help='also run the sweeps the configuration lists')
            sub.add_argument('--jobs', type=int, default=2, help='steps run at a time (default 2)')
            sub.add_argument('--dry-run', action='store_true',
                             help='print the steps of the training phase that are not done yet, run nothing')
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = gym_config.load(args.config, args.set)
        if args.command == 'make':
            if not args.out:
                raise DataError('make: --out is required')
            print(make(config, args.out))
            return 0
        from .experiment import Experiment
        from .page import write
        out = args.out or os.path.join('runs', 'drift_gym', config.name)
        experiment = Experiment(config, out, args.jobs, args.sweeps)
        if args.dry_run:
            print('\n'.join(experiment.dry_run()))
            return 0
        outcome = experiment.run()
        page = write(experiment, outcome, args.sweeps)
        print(f'== drift gym: {page} ({outcome["seconds"] / 60:.1f} min)')
        return 0
    except (DataError, StepFailed, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
