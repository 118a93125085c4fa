"""proxy/model"""
