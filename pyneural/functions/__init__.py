"""pyneural.functions"""
