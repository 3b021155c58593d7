"""Host metrics: pure rollup arithmetic (``rollup``) and the psutil sampler (``sampler``).

Importing the package stays cheap; ``sampler`` (and psutil) load only when asked for.
"""
