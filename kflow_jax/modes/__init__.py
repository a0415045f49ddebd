"""What `kflow_jax.main` runs: the train loop, periodic evaluation, restore/edit/mix."""
