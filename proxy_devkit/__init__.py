"""proxy_devkit"""
