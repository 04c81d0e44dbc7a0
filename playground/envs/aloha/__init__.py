"""ALOHA 2 tasks: AlohaS2RPick and AlohaS2RPegInsertion."""
