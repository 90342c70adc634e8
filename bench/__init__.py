"""optbench's benchmark runner: tasks, train_one_run (config -> record), the store, the CLI.

python -m bench.run --optim adam --sched staircase        # see bench/run.py and the README
"""
