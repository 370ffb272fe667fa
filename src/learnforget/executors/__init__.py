"""learnforget.executors"""
