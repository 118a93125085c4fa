"""proxy/server"""
