"""learnforget.report"""
