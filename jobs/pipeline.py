"""Entry script for `ray job submit`: the whole iTool loop; same code as `itool run`.

ray job submit --working-dir . -- python jobs/pipeline.py --config quickstart [--section.key value ...]
"""

if __name__ == "__main__":
    from _entry import run

    run("run")
