"""What an analysis query is: its shape, keys and states, decided once when it is defined."""
