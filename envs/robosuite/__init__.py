"""robosuite tasks (robosuite ships its own assets, so they run offline): the embedded demo environment."""
