"""What the installer leaves on the box, as every part reads it.

The file-system layout, the installer's lifecycle event journal and the System page's facts.
The installer writes them; the control plane reads them (it never imports the installer).
"""
