"""Entry script for `ray job submit`: evaluation of a checkpoint; same code as `itool eval`.

ray job submit --working-dir . -- python jobs/evaluate.py --config quickstart [--section.key value ...]
"""

if __name__ == "__main__":
    from _entry import run

    run("eval")
