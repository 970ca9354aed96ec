"""Action heads: backbone features + state → action chunk (see :class:`policies.base.ActionHead`)."""
