"""proxy/ops"""
