"""proxy/keys/transit"""
