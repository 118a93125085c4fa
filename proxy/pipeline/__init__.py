"""proxy/pipeline/app"""
