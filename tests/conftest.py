pytest_plugins = ["grader.testing.pytest_plugin"]
