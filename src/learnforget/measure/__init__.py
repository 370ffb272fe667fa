"""learnforget.measure"""
