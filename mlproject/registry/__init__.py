"""What a registered model is (the pyfunc) and when one replaces another (promotion policy)."""
