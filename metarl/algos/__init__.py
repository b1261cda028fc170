"""Meta-learning algorithms: one small module each, registered in `metarl.algos.ALGORITHMS`."""
