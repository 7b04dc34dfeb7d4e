"""Partition planning and applying (SPEC §6).

Not built yet: the planner and applier arrive with the partitioning issue.
Nothing here pretends to partition a disk.
"""
