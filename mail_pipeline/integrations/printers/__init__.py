"""Print-and-mail partners: Lob, Stannp, IntelliPrint, and their sandboxes."""
