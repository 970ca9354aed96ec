"""Convert DROID raw recordings (trajectory.h5 + MP4s per episode) into a LeRobot dataset for env=droid.

python scripts/convert_droid.py /data/droid_raw/my_lab data/droid_my_lab
python scripts/convert_droid.py /data/droid_raw data/droid --annotations aggregated-annotations-030724.json
python scripts/convert_droid.py /data/droid_raw data/droid_jp --state cartesian --action joint_position
python train.py experiment=pi05_droid env.dataset.root=data/droid   # env.state_space / action_space to match
"""

from __future__ import annotations

import argparse

from envs.droid.convert import convert
from envs.droid.spaces import ACTION_SPACES, STATE_SPACES
from vla_train.cli import exit_on_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", help="a directory holding DROID episode directories (with trajectory.h5)")
    parser.add_argument("output", help="the new LeRobot dataset's directory")
    parser.add_argument("--repo-id", default="local/droid")
    parser.add_argument("--annotations", help="DROID's aggregated language annotations (json, keyed by uuid)")
    parser.add_argument("--include-failures", action="store_true")
    parser.add_argument("--state", default="joint", choices=list(STATE_SPACES), help="state space")
    parser.add_argument(
        "--action", default="joint_velocity", choices=list(ACTION_SPACES), help="action space"
    )
    args = parser.parse_args(argv)
    try:
        count = convert(
            args.raw,
            args.output,
            args.repo_id,
            args.annotations,
            args.include_failures,
            state_space=args.state,
            action_space=args.action,
        )
    except (FileExistsError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{count} episodes → {args.output}")
    return count


if __name__ == "__main__":
    exit_on_error(main)()  # `error: <message>` and exit 2 for bad input, not a traceback
