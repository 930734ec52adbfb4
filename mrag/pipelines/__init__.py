"""The jobs mrag runs: ingest, index, demo. Each module wires stages into a Ray plan and offers
``add_arguments`` / ``command`` / ``main`` so that ``mrag <job>``, ``python -m pipelines.<job>``
(the repo's launchers, for ``ray job submit --working-dir .``) and notebooks share one code path.
"""
