"""proxy/keys"""
