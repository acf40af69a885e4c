"""`python -m grader.cli`: the `grade` command."""

from grader.cli import main

if __name__ == "__main__":  # importing the module (a tool walking the package) runs nothing
    main()
