"""Multi-objective agents for the offloading environments.

* :mod:`agents.dsac`: preference-conditioned multi-objective Discrete-SAC (GMORL's agent);
* :mod:`agents.ddpg`: multi-objective DDPG for the continuous env;
* :mod:`agents.baselines`: heuristic baselines behind one interface;
* shared parts: :mod:`agents.networks`, :mod:`agents.buffer`, :mod:`agents.preferences`,
  :mod:`agents.evaluation`, :mod:`agents.common`.

``train.py`` at the repository root drives the learning agents.
"""
