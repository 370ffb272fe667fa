"""learnforget.data"""
