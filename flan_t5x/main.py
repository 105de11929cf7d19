r"""T5X's `t5x.main`: one entry point with --run_mode, for launchers written for it.

  python -m flan_t5x.main --run_mode=train --gin_file=gin/demo.gin
  python -m flan_t5x.main --run_mode=eval --gin_file=gin/eval_demo.gin

runs `python -m flan_t5x.<run_mode>` with the other flags unchanged (the module runs as __main__,
exactly as when started directly). T5X's other modes have flan_t5x equivalents of their own:
precompile -> `python -m flan_t5x.plan`, export -> `python -m flan_t5x.convert to-hf`.
"""

from __future__ import annotations

import runpy
import sys

RUN_MODES = ('train', 'eval', 'infer')
ELSEWHERE = {'precompile': 'python -m flan_t5x.plan (compiles the train step and decode for a TPU slice)',
             'export': 'python -m flan_t5x.convert to-hf'}


def split_run_mode(argv: list[str]) -> tuple[str | None, list[str]]:
  """(the --run_mode value, argv without it); `--run_mode=x` or `--run_mode x`."""
  mode, rest, args = None, [argv[0]], iter(argv[1:])
  for arg in args:
    if arg.startswith('--run_mode='):
      mode = arg.split('=', 1)[1]
    elif arg == '--run_mode':
      mode = next(args, None)
    else:
      rest.append(arg)
  return mode, rest


def main(argv: list[str]) -> int:
  mode, rest = split_run_mode(argv)
  if mode is None or mode.lower() not in RUN_MODES:
    hint = f'; for {mode} use {ELSEWHERE[mode.lower()]}' if mode and mode.lower() in ELSEWHERE else ''
    print(f'error: --run_mode={mode}: expected one of {", ".join(RUN_MODES)}{hint}.', file=sys.stderr)
    return 2
  sys.argv = rest
  runpy.run_module(f'flan_t5x.{mode.lower()}', run_name='__main__', alter_sys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
