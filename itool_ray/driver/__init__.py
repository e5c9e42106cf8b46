"""The driver wing (DESIGN §1): the only part of the library that touches Ray actors.

``pipeline`` runs the plan over a run directory and owns the policy fleet; ``stages`` holds the plan and
each stage's body; ``mining`` is the Ray Data deficiency-mining stage; ``rundir`` the run directory, its
layout and manifest; ``report`` the learning table; ``compare`` the ablation command.
"""
