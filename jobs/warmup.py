"""Entry script for `ray job submit`: the warm-up SFT stage; same code as `itool warmup`.

ray job submit --working-dir . -- python jobs/warmup.py --config quickstart [--section.key value ...]
"""

if __name__ == "__main__":
    from _entry import run

    run("warmup")
