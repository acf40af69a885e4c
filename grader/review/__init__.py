"""The teacher's review: `workbook` (reading review.xlsx back), `merge` (the three-way
merge, pure), `importing` (`grade review import`), `final` (the teacher's value where one was
decided, else the AI's)."""
