"""learnforget.analysis"""
