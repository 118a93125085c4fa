"""proxy/guards"""
