"""The offline benchmark: build the expert zoo, merge it with every data-free method, judge, report."""
