"""Continual learning: rehearsal buffers, methods (SGD, Joint, ER, DER, DER++, A-GEM, ER-ACE), metrics."""
